"""Sentinel's replica pool as the app makes it (extensions.StickyReplicaPool), against real
sentinels: when the server it keeps to changes (the replica hangs, then answers again; the
replica dies), a process's connections end up on one server, none left on the one before."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pytest
from redis.sentinel import Sentinel

from app.extensions import StickyReplicaPool
from tests.reliability.servers import SentinelCluster
from tests.reliability.servers import wait_until

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")

_PORT = re.compile(rb"^tcp_port:(\d+)", re.MULTILINE)


def servers_of_a_round(pool: StickyReplicaPool, size: int) -> list[int]:
    """Hold `size` connections of `pool` at once, as concurrent requests would; return the
    port of the server each one reads (its own INFO), then give them back."""
    held = [pool.get_connection() for _ in range(size)]
    try:
        ports = []
        for connection in held:
            connection.send_command("INFO", "server")
            found = _PORT.search(connection.read_response())
            assert found is not None
            ports.append(int(found.group(1)))
        return ports
    finally:
        for connection in held:
            pool.release(connection)


def test_the_pools_connections_end_up_on_one_server_when_the_kept_one_changes() -> None:
    with SentinelCluster() as cluster:
        sentinels = Sentinel(
            [("127.0.0.1", sentinel.port) for sentinel in cluster.sentinels],
            sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2},
        )
        # The app's pool, with short waits: a hung replica is given up on in a second.
        reads = sentinels.slave_for(
            cluster.master,
            connection_pool_class=StickyReplicaPool,
            socket_timeout=1,
            socket_connect_timeout=1,
        )
        pool = reads.connection_pool
        assert isinstance(pool, StickyReplicaPool)
        replica, primary = cluster.replica.port, cluster.primary.port
        assert servers_of_a_round(pool, 3) == [replica] * 3

        # Hung: a new connection does not answer in time (a TimeoutError), and moves on to the
        # primary. The connections to the replica, in use meanwhile, are not taken back.
        process = cluster.replica.process
        assert process is not None
        os.kill(process.pid, signal.SIGSTOP)
        try:
            held = [pool.get_connection() for _ in range(4)]  # the 3 idle ones and a new one
            assert [connection.port for connection in held] == [replica] * 3 + [primary]
            for connection in held:
                pool.release(connection)
        finally:
            os.kill(process.pid, signal.SIGCONT)

        # Back: new connections go to the replica again; the one to the primary is dropped
        # when given back, and from the next round on every read is the replica's.
        wait_until(lambda: sentinels.discover_slaves(cluster.master), 30, "the replica listed")
        servers_of_a_round(pool, 3)
        assert servers_of_a_round(pool, 3) == [replica] * 3
        assert servers_of_a_round(pool, 3) == [replica] * 3

        # Dead: a connection moves to the primary, and none stays on the dead replica.
        cluster.replica.kill()
        assert servers_of_a_round(pool, 3) == [primary] * 3
        assert servers_of_a_round(pool, 3) == [primary] * 3
        reads.close()
