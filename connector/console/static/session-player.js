// Replays a recorded session with asciinema-player. The page names the recording in data-cast-url
// (no inline script: the Content-Security-Policy allows scripts from /console/static/ only).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const element = document.getElementById("player");
  if (!element || typeof AsciinemaPlayer === "undefined") {
    return;
  }
  AsciinemaPlayer.create(element.dataset.castUrl, element, {
    controls: true,
    fit: "width",
    idleTimeLimit: 2,
    speed: Number(element.dataset.speed || "1"),
  });
});
