"""`dashboard.server.serve` (the browser tests' and benches' real Streamlit server)."""
from __future__ import annotations

import socket
import urllib.request

from dashboard import server


def test_a_port_taken_before_streamlit_binds_it_is_replaced(tmp_path, monkeypatch):
    """The race of a port found free and bound by another process before Streamlit starts:
    the server is started again on another port, and the URL is that server's."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()  # accepts connections, never answers HTTP
        taken = busy.getsockname()[1]
        handed = []
        real = server.free_port

        def free_port():
            handed.append(taken if not handed else real())
            return handed[-1]

        monkeypatch.setattr(server, "free_port", free_port)
        with server.serve(tmp_path / "store") as url:
            assert len(handed) == 2 and url.endswith(f":{handed[1]}") and handed[1] != taken
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=10) as r:
                assert r.status == 200
            assert server.server_pid(url) > 0
