"""The serial link on a real TCP socket: junk before a reply is read in blocks, and dropped."""

import socket
import threading

from common import pace
from common.pace.commands import COMMANDS
from services.bms_reader.link import Link

JUNK = bytes(range(0x80, 0x100)) * 800  # 100 kB of bytes that hold no frame start


def test_junk_before_a_reply_is_read_in_blocks_not_a_byte_per_system_call():
    reply = pace.encode_frame(0x00, bytes(range(20)), adr=1)
    server = socket.create_server(("127.0.0.1", 0))

    def bms():
        conn, _ = server.accept()
        with conn:
            conn.recv(100)  # the request
            conn.sendall(JUNK + reply)
            conn.recv(100)  # until the test is done
    threading.Thread(target=bms, daemon=True).start()
    link = Link(f"socket://127.0.0.1:{server.getsockname()[1]}", 9600, response_timeout_s=30)
    reads = []
    real_read = link._port.read
    link._port.read = lambda n: reads.append(n) or real_read(n)
    try:
        frame = link.transact(COMMANDS["analog"].request(1))
    finally:
        link.close()
        server.close()
    assert frame == pace.parse_frame(reply)
    assert link.splitter.junk_bytes >= len(JUNK)
    assert len(reads) < len(JUNK) // 100, f"{len(reads)} reads for {len(JUNK)} bytes of junk"
