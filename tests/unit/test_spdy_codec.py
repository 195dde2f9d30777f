"""connector.kube.spdy: hand-built frames, real kubectl bytes, fragmented input, malformed input, round trips."""

from __future__ import annotations

import itertools
import struct
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector.kube.spdy import (
    FLAG_FIN,
    FLAG_UNIDIRECTIONAL,
    MAX_FRAME_LENGTH,
    SPDY_DICTIONARY,
    DataFrame,
    Frame,
    GoAwayFrame,
    GoAwayStatus,
    HeadersFrame,
    PingFrame,
    RstStatus,
    RstStreamFrame,
    SettingsEntry,
    SettingsFrame,
    SpdyFrameReader,
    SpdyFrameWriter,
    SpdyProtocolError,
    SynReplyFrame,
    SynStreamFrame,
    UnknownControlFrame,
    WindowUpdateFrame,
    header_value,
)

# What kubectl 1.29 sent after the 101 of `kubectl exec -i web -- cat` with "hi" on its stdin
# (the server answered each SYN_STREAM with a SYN_REPLY): four SYN_STREAMs whose header blocks
# continue one zlib stream compressed by Go, then a DATA frame on the stdin stream.
KUBECTL_129_EXEC = bytes.fromhex(
    "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4c45c6851c29a0a0a6800000000ffff"
    "800300010000001700000003000000000000c22e555c92929907000000ffff"
    "800300010000001900000005000000000000c22ac5565c92925f5a02000000ffff"
    "800300010000001500000007000000000000c229975a5404000000ffff"
    "000000030000000368690a"
)
KUBECTL_129_FRAMES = [
    SynStreamFrame(stream_id=1, headers={"streamtype": ("error",)}),
    SynStreamFrame(stream_id=3, headers={"streamtype": ("stdin",)}),
    SynStreamFrame(stream_id=5, headers={"streamtype": ("stdout",)}),
    SynStreamFrame(stream_id=7, headers={"streamtype": ("stderr",)}),
    DataFrame(stream_id=3, data=b"hi\n"),
]


def control(frame_type: int, payload: bytes, *, flags: int = 0, version: int = 3) -> bytes:
    return struct.pack(">HHI", 0x8000 | version, frame_type, flags << 24 | len(payload)) + payload


def header_block(pairs: list[tuple[bytes, bytes]], *, count: int | None = None) -> bytes:
    block = struct.pack(">I", len(pairs) if count is None else count)
    for name, value in pairs:
        block += struct.pack(">I", len(name)) + name + struct.pack(">I", len(value)) + value
    return block


def compressed(*blocks: bytes) -> list[bytes]:
    """Each block compressed as a SPDY peer does: one zlib stream with the dictionary, sync-flushed per block."""
    deflater = zlib.compressobj(zdict=SPDY_DICTIONARY)
    return [deflater.compress(block) + deflater.flush(zlib.Z_SYNC_FLUSH) for block in blocks]


def syn_stream(stream_id: int, block: bytes, *, flags: int = 0) -> bytes:
    return control(1, struct.pack(">IIBB", stream_id, 0, 0, 0) + block, flags=flags)


def test_dictionary_is_the_spdy3_one() -> None:
    # Peers check the dictionary by its Adler-32 in the zlib header: this is the id Go sends (see the vector).
    assert len(SPDY_DICTIONARY) == 1423
    assert zlib.adler32(SPDY_DICTIONARY) == 0xE3C6A7C2
    assert SPDY_DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert SPDY_DICTIONARY.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


def test_decodes_real_kubectl_bytes() -> None:
    assert SpdyFrameReader().feed(KUBECTL_129_EXEC) == KUBECTL_129_FRAMES


def test_decodes_real_kubectl_bytes_fed_one_byte_at_a_time() -> None:
    reader = SpdyFrameReader()
    frames: list[Frame] = []
    for index in range(len(KUBECTL_129_EXEC)):
        frames += reader.feed(KUBECTL_129_EXEC[index : index + 1])
    assert frames == KUBECTL_129_FRAMES
    assert reader.buffered == 0


def test_every_split_point_gives_the_same_frames() -> None:
    for split in range(len(KUBECTL_129_EXEC) + 1):
        reader = SpdyFrameReader()
        frames = reader.feed(KUBECTL_129_EXEC[:split]) + reader.feed(KUBECTL_129_EXEC[split:])
        assert frames == KUBECTL_129_FRAMES, split


def test_header_blocks_share_one_compression_context() -> None:
    # The second SYN_STREAM's block only makes sense after the first one: a fresh reader fails on it.
    second = KUBECTL_129_EXEC[49:80]
    with pytest.raises(SpdyProtocolError, match="does not decompress"):
        SpdyFrameReader().feed(second)


def test_partial_frame_is_buffered_until_complete() -> None:
    data = control(6, struct.pack(">I", 7))
    reader = SpdyFrameReader()
    assert reader.feed(data[:7]) == []
    assert reader.buffered == 7
    assert reader.feed(data[7:]) == [PingFrame(ping_id=7)]
    assert reader.buffered == 0


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        (struct.pack(">II", 5, 3) + b"abc", DataFrame(stream_id=5, data=b"abc")),
        (struct.pack(">II", 5, FLAG_FIN << 24), DataFrame(stream_id=5, data=b"", flags=FLAG_FIN)),
        (control(3, struct.pack(">II", 9, 5)), RstStreamFrame(stream_id=9, status=RstStatus.CANCEL)),
        (control(4, struct.pack(">IIIII", 2, 0x01000007, 65536, 4, 100)),
         SettingsFrame(entries=(SettingsEntry(id=7, value=65536, flags=1), SettingsEntry(id=4, value=100)))),
        (control(4, struct.pack(">I", 0), flags=1), SettingsFrame(flags=1)),
        (control(6, struct.pack(">I", 0xFFFFFFFF)), PingFrame(ping_id=0xFFFFFFFF)),
        (control(7, struct.pack(">II", 0x80000003, 1)), GoAwayFrame(last_good_stream_id=3, status=1)),
        (control(9, struct.pack(">II", 0, 1024)), WindowUpdateFrame(stream_id=0, delta=1024)),
        (control(10, b"cred", flags=3), UnknownControlFrame(frame_type=10, flags=3, payload=b"cred")),
    ],
    ids=["data", "data-fin", "rst", "settings", "settings-clear", "ping", "goaway", "window-update", "unknown"],
)
def test_hand_built_frames(wire: bytes, expected: Frame) -> None:
    assert SpdyFrameReader().feed(wire) == [expected]


def test_hand_built_header_frames_with_multi_values() -> None:
    first, second, third = compressed(
        header_block([(b"streamtype", b"data"), (b"port", b"8080"), (b"requestid", b"0")]),
        header_block([(b"x-multi", b"a\x00\x00b")]),
        header_block([]),
    )
    stream_id_and_block = struct.pack(">I", 1)
    wire = (
        control(1, struct.pack(">IIBB", 3, 1, 7 << 5, 9) + first, flags=FLAG_FIN | FLAG_UNIDIRECTIONAL)
        + control(2, stream_id_and_block + second, flags=FLAG_FIN)
        + control(8, stream_id_and_block + third)
    )
    syn, reply, headers = SpdyFrameReader().feed(wire)
    assert syn == SynStreamFrame(
        stream_id=3, associated_stream_id=1, priority=7, slot=9, flags=FLAG_FIN | FLAG_UNIDIRECTIONAL,
        headers={"streamtype": ("data",), "port": ("8080",), "requestid": ("0",)},
    )
    assert syn.fin and header_value(syn.headers, "port") == "8080" and header_value(syn.headers, "nope") is None
    assert reply == SynReplyFrame(stream_id=1, headers={"x-multi": ("a", "", "b")}, flags=FLAG_FIN)
    assert headers == HeadersFrame(stream_id=1, headers={})


def _block(*pairs: tuple[bytes, bytes], count: int | None = None, trailing: bytes = b"") -> bytes:
    return compressed(header_block(list(pairs), count=count) + trailing)[0]


def _other_dictionary(block: bytes) -> bytes:
    deflater = zlib.compressobj(zdict=b"not the SPDY dictionary")
    return deflater.compress(block) + deflater.flush(zlib.Z_SYNC_FLUSH)


MALFORMED = {
    "wrong version": control(6, struct.pack(">I", 1), version=2),
    "data on stream 0": struct.pack(">II", 0, 1) + b"x",
    "rst status 0": control(3, struct.pack(">II", 1, 0)),
    "rst on stream 0": control(3, struct.pack(">II", 0, 5)),
    "rst too short": control(3, struct.pack(">I", 1)),
    "ping id 0": control(6, struct.pack(">I", 0)),
    "ping with flags": control(6, struct.pack(">I", 1), flags=1),
    "ping too long": control(6, struct.pack(">II", 1, 2)),
    "goaway too short": control(7, struct.pack(">I", 1)),
    "goaway with flags": control(7, struct.pack(">II", 1, 0), flags=1),
    "window update delta 0": control(9, struct.pack(">II", 1, 0)),
    "window update with flags": control(9, struct.pack(">II", 1, 1), flags=2),
    "settings count mismatch": control(4, struct.pack(">II", 2, 0)),
    "settings too short": control(4, b"\x00"),
    "syn stream too short": control(1, b"\x00\x00\x00\x01\x00"),
    "syn stream on stream 0": syn_stream(0, _block((b"a", b"b"))),
    "syn stream without header block": syn_stream(1, b""),
    "header block not zlib": syn_stream(1, b"\x00\x01\x02\x03garbage"),
    "header block with another dictionary": syn_stream(1, _other_dictionary(header_block([(b"a", b"b")]))),
    "uppercase header name": syn_stream(1, _block((b"StreamType", b"error"))),
    "duplicate header": syn_stream(1, _block((b"a", b"1"), (b"a", b"2"))),
    "empty header name": syn_stream(1, _block((b"", b"x"))),
    "more headers announced than present": syn_stream(1, _block((b"a", b"b"), count=2)),
    "bytes after the headers": syn_stream(1, _block((b"a", b"b"), trailing=b"\x00")),
    "truncated header count": syn_stream(1, compressed(b"\x00\x00")[0]),
    "syn reply too short": control(2, b"\x00\x00"),
    "headers on stream 0": control(8, struct.pack(">I", 0) + _block()),
}


@pytest.mark.parametrize("wire", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_raises_protocol_error(wire: bytes) -> None:
    with pytest.raises(SpdyProtocolError, match="SPDY frame at byte 0: "):
        SpdyFrameReader().feed(wire)


def test_error_names_the_offset_and_the_reader_stays_failed() -> None:
    reader = SpdyFrameReader()
    good = control(6, struct.pack(">I", 1))
    with pytest.raises(SpdyProtocolError, match=f"at byte {len(good)}: PING with id 0"):
        reader.feed(good + control(6, struct.pack(">I", 0)))
    with pytest.raises(SpdyProtocolError, match="stopped after an earlier error"):
        reader.feed(good)


def test_frame_length_limit() -> None:
    reader = SpdyFrameReader(max_frame_length=16)
    assert reader.feed(struct.pack(">II", 1, 16) + bytes(16)) == [DataFrame(stream_id=1, data=bytes(16))]
    with pytest.raises(SpdyProtocolError, match="frame of 17 bytes exceeds the limit of 16"):
        reader.feed(struct.pack(">II", 1, 17))  # refused from its header, before the payload arrives
    with pytest.raises(ValueError, match="max_frame_length"):
        SpdyFrameReader(max_frame_length=MAX_FRAME_LENGTH + 1)


def test_decompression_bomb_is_refused() -> None:
    bomb = _block((b"a", b"x" * 100_000))
    assert len(bomb) < 1000
    with pytest.raises(SpdyProtocolError, match="decompresses past 4096 bytes"):
        SpdyFrameReader(max_header_block=4096).feed(syn_stream(1, bomb))


def test_header_block_that_ends_the_zlib_stream_is_refused() -> None:
    deflater = zlib.compressobj(zdict=SPDY_DICTIONARY)
    finished = deflater.compress(header_block([(b"a", b"b")])) + deflater.flush(zlib.Z_FINISH)
    with pytest.raises(SpdyProtocolError, match="ends the connection's compression stream"):
        SpdyFrameReader().feed(syn_stream(1, finished))


def test_writer_output_matches_hand_built_bytes() -> None:
    writer = SpdyFrameWriter()
    data = DataFrame(stream_id=5, data=b"abc", flags=FLAG_FIN)
    assert writer.encode(data) == struct.pack(">II", 5, 0x01000003) + b"abc"
    assert writer.encode(RstStreamFrame(stream_id=9, status=RstStatus.CANCEL)) == control(3, struct.pack(">II", 9, 5))
    assert writer.encode(PingFrame(ping_id=3)) == control(6, struct.pack(">I", 3))
    assert writer.encode(GoAwayFrame(last_good_stream_id=7, status=GoAwayStatus.PROTOCOL_ERROR)) == control(
        7, struct.pack(">II", 7, 1))
    assert writer.encode(WindowUpdateFrame(stream_id=1, delta=10)) == control(9, struct.pack(">II", 1, 10))
    assert writer.encode(SettingsFrame(entries=(SettingsEntry(id=4, value=100, flags=1),))) == control(
        4, struct.pack(">III", 1, 0x01000004, 100))


def test_writer_header_blocks_decode_with_plain_zlib() -> None:
    # What any zlib with the dictionary (Go's included) reads: count, then length-prefixed name/value pairs.
    writer = SpdyFrameWriter()
    wire = writer.encode(SynReplyFrame(stream_id=1, headers={"StreamType": "error", "v": ["a", "b"]}))
    inflater = zlib.decompressobj(zdict=SPDY_DICTIONARY)
    assert inflater.decompress(wire[12:]) == header_block([(b"streamtype", b"error"), (b"v", b"a\x00b")])


@pytest.mark.parametrize(
    "frame",
    [
        DataFrame(stream_id=0, data=b""),
        DataFrame(stream_id=1 << 31, data=b""),
        DataFrame(stream_id=1, data=b"", flags=256),
        SynStreamFrame(stream_id=1, headers={}, priority=8),
        SynStreamFrame(stream_id=1, headers={"": "x"}),
        SynStreamFrame(stream_id=1, headers={"a": "x", "A": "y"}),
        SynStreamFrame(stream_id=1, headers={"a": []}),
        SynStreamFrame(stream_id=1, headers={"a": "nul\x00inside"}),
        SynStreamFrame(stream_id=1, headers={"a": "\u20ac"}),
        RstStreamFrame(stream_id=1, status=0),
        PingFrame(ping_id=0),
        WindowUpdateFrame(stream_id=1, delta=0),
        UnknownControlFrame(frame_type=6, flags=0, payload=b""),
    ],
)
def test_writer_refuses_frames_no_peer_accepts(frame: Frame) -> None:
    with pytest.raises(ValueError):
        SpdyFrameWriter().encode(frame)


# -- property tests -------------------------------------------------------------------------------

_ids = st.integers(1, 0x7FFFFFFF)
_flags = st.sampled_from([0, FLAG_FIN, FLAG_UNIDIRECTIONAL, FLAG_FIN | FLAG_UNIDIRECTIONAL])
_names = st.text(st.characters(codec="latin-1", exclude_characters="\x00ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                 min_size=1, max_size=12)
_values = st.lists(st.text(st.characters(codec="latin-1", exclude_characters="\x00"), max_size=20),
                   min_size=1, max_size=3).map(tuple)
_headers = st.dictionaries(_names, _values, max_size=4)

FRAMES = st.one_of(
    st.builds(DataFrame, stream_id=_ids, data=st.binary(max_size=300), flags=st.sampled_from([0, FLAG_FIN])),
    st.builds(SynStreamFrame, stream_id=_ids, headers=_headers, associated_stream_id=st.integers(0, 0x7FFFFFFF),
              priority=st.integers(0, 7), slot=st.integers(0, 255), flags=_flags),
    st.builds(SynReplyFrame, stream_id=_ids, headers=_headers, flags=st.sampled_from([0, FLAG_FIN])),
    st.builds(HeadersFrame, stream_id=_ids, headers=_headers, flags=st.sampled_from([0, FLAG_FIN])),
    st.builds(RstStreamFrame, stream_id=_ids, status=st.integers(1, 0xFFFFFFFF)),
    st.builds(SettingsFrame, flags=st.sampled_from([0, 1]), entries=st.lists(
        st.builds(SettingsEntry, id=st.integers(0, 0xFFFFFF), value=st.integers(0, 0xFFFFFFFF),
                  flags=st.integers(0, 255)), max_size=3).map(tuple)),
    st.builds(PingFrame, ping_id=st.integers(1, 0xFFFFFFFF)),
    st.builds(GoAwayFrame, last_good_stream_id=st.integers(0, 0x7FFFFFFF), status=st.integers(0, 0xFFFFFFFF)),
    st.builds(WindowUpdateFrame, stream_id=st.integers(0, 0x7FFFFFFF), delta=st.integers(1, 0x7FFFFFFF)),
    st.builds(UnknownControlFrame, frame_type=st.integers(10, 0xFFFF), flags=st.integers(0, 255),
              payload=st.binary(max_size=50)),
)


@settings(max_examples=200, deadline=None)
@given(frames=st.lists(FRAMES, max_size=12), cuts=st.lists(st.integers(0, 10_000), max_size=8))
def test_round_trip_through_any_fragmentation(frames: list[Frame], cuts: list[int]) -> None:
    writer = SpdyFrameWriter()
    wire = b"".join(writer.encode(frame) for frame in frames)
    points = sorted({0, len(wire), *(cut % (len(wire) + 1) for cut in cuts)})
    reader = SpdyFrameReader()
    decoded: list[Frame] = []
    for start, end in itertools.pairwise(points):
        decoded += reader.feed(wire[start:end])
    assert decoded == frames
    assert reader.buffered == 0


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=400), prefix=st.sampled_from([b"", KUBECTL_129_EXEC[:49]]))
def test_arbitrary_bytes_only_ever_raise_protocol_errors(data: bytes, prefix: bytes) -> None:
    # What a passive tap relies on: garbage can fail decoding, never crash it another way.
    reader = SpdyFrameReader()
    try:
        reader.feed(prefix + data)
    except SpdyProtocolError:
        pass
