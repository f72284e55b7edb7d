"""A local multi-worker cluster for tests and benchmarks on one machine."""
import json
import socket


def loopback_tf_configs(num_workers):
    """``TF_CONFIG`` values (JSON strings) of a cluster of ``num_workers`` worker tasks on
    127.0.0.1, one per task, on ports free now (for tests and benchmarks on one machine)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(num_workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        workers = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    finally:
        for s in sockets:
            s.close()
    return [json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
            for i in range(num_workers)]
