"""API benchmark: ports created per second by a real `lbtap server` process.

Two figures per database (SQLite always; PostgreSQL when reachable):
  * one bulk POST of 1000 ports (target: under 2 s on SQLite);
  * 50 concurrent clients each creating ports one request at a time.
Every run also checks the result: distinct MACs and IPs, and no 5xx.

    .venv/bin/python bench/api.py [--ports 1000] [--clients 50] [--per-client 20] [--out bench/results]

A bar chart is saved with matplotlib when it is installed (otherwise skipped with a
message); the figures are also written as JSON next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
PG_DEFAULT = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _lbtap() -> list[str]:
    script = Path(sys.executable).parent / "lbtap"
    if script.exists():
        return [str(script)]
    found = shutil.which("lbtap")
    return [found] if found else [sys.executable, "-m", "lbtap.cli.main"]


class Server:
    """`lbtap server` as a child process, stopped by PID."""

    def __init__(self, state_dir: str, db_url: str | None):
        self.url = f"http://127.0.0.1:{_free_port()}"
        port = self.url.rsplit(":", 1)[1]
        argv = [*_lbtap(), "server", "--state-dir", state_dir, "--bind", "127.0.0.1", "--port", port,
                "--log-level", "WARNING"]
        if db_url:
            argv += ["--db-url", db_url]
        self.log = open(Path(state_dir) / "server.log", "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise SystemExit(f"lbtap server exited ({self.proc.returncode}); see {self.log.name}")
            try:
                if httpx.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit("lbtap server did not start within 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def _network(client: httpx.Client, cidr: str) -> str:
    net = client.post("/networks", json={"network": {"name": "bench", "project_id": "bench"}})
    net.raise_for_status()
    net_id = net.json()["network"]["id"]
    sub = client.post("/subnets", json={"subnet": {"network_id": net_id, "cidr": cidr, "ip_version": 4,
                                                 "project_id": "bench"}})
    sub.raise_for_status()
    return net_id


def _check(ports: list[dict], expected: int) -> None:
    macs = {p["mac_address"] for p in ports}
    ips = {ip["ip_address"] for p in ports for ip in p["fixed_ips"]}
    if len(ports) != expected or len(macs) != expected or len(ips) != expected:
        raise SystemExit(f"wrong result: {len(ports)} ports, {len(macs)} MACs, {len(ips)} IPs (want {expected})")


def bench_bulk(url: str, n: int) -> float:
    with httpx.Client(base_url=url + "/v2.0", timeout=300) as c:
        net_id = _network(c, "10.100.0.0/20")
        body = {"ports": [{"network_id": net_id, "name": f"bulk-{i}", "project_id": "bench"} for i in range(n)]}
        t0 = time.perf_counter()
        resp = c.post("/ports", json=body)
        elapsed = time.perf_counter() - t0
        if resp.status_code != 201:
            raise SystemExit(f"bulk create failed: {resp.status_code} {resp.text[:300]}")
        _check(resp.json()["ports"], n)
    return elapsed


async def _client_loop(url: str, net_id: str, count: int, out: list[dict], errors: list[str]) -> None:
    async with httpx.AsyncClient(base_url=url + "/v2.0", timeout=300) as c:
        for _ in range(count):
            resp = await c.post("/ports", json={"port": {"network_id": net_id, "project_id": "bench"}})
            if resp.status_code != 201:
                errors.append(f"{resp.status_code} {resp.text[:200]}")
            else:
                out.append(resp.json()["port"])


def bench_concurrent(url: str, clients: int, per_client: int) -> float:
    with httpx.Client(base_url=url + "/v2.0", timeout=60) as c:
        net_id = _network(c, "10.101.0.0/20")
    ports: list[dict] = []
    errors: list[str] = []

    async def run() -> None:
        await asyncio.gather(*(_client_loop(url, net_id, per_client, ports, errors) for _ in range(clients)))

    t0 = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"{len(errors)} requests failed, first: {errors[0]}")
    _check(ports, clients * per_client)
    return elapsed


def _pg_url() -> str | None:
    url = os.environ.get("LBTAP_TEST_PG_URL", PG_DEFAULT)
    sys.path.insert(0, str(REPO))
    try:
        from tests.support import _reachable

        if not _reachable(url):
            return None
        try:
            from tests.support import fresh_db_url

            os.environ.setdefault("LBTAP_TEST_PG_URL", url)
            return fresh_db_url("postgresql")
        except Exception:  # no helper or it skipped: reuse the database as it is
            return url
    finally:
        sys.path.pop(0)


def _plot(results: dict, out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: skipping the plot (pip install matplotlib to get it)")
        return
    labels = list(results)
    bulk = [results[k]["bulk_ports_per_s"] for k in labels]
    conc = [results[k]["concurrent_ports_per_s"] for k in labels]
    x = range(len(labels))
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar([i - 0.2 for i in x], bulk, width=0.4, label="one bulk request")
    ax.bar([i + 0.2 for i in x], conc, width=0.4, label="concurrent clients")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("ports created per second")
    ax.set_title("lbtap API port creation")
    ax.legend()
    fig.tight_layout()
    path = out / "api.png"
    fig.savefig(path)
    print(f"plot saved to {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ports", type=int, default=1000, help="ports in the bulk request")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=20, help="ports each concurrent client creates")
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()

    backends: list[tuple[str, str | None]] = [("sqlite", None)]
    if not args.no_postgres:
        pg = _pg_url()
        if pg:
            backends.append(("postgresql", pg))
        else:
            print("PostgreSQL unreachable: benchmarking SQLite only")

    results: dict[str, dict] = {}
    for name, db_url in backends:
        with tempfile.TemporaryDirectory(prefix="lbtap-bench-") as state:
            server = Server(state, db_url)
            try:
                bulk_s = bench_bulk(server.url, args.ports)
                conc_s = bench_concurrent(server.url, args.clients, args.per_client)
            finally:
                server.stop()
        total = args.clients * args.per_client
        results[name] = {
            "bulk_ports": args.ports, "bulk_seconds": round(bulk_s, 3),
            "bulk_ports_per_s": round(args.ports / bulk_s, 1),
            "concurrent_clients": args.clients, "concurrent_ports": total,
            "concurrent_seconds": round(conc_s, 3), "concurrent_ports_per_s": round(total / conc_s, 1),
        }
        r = results[name]
        target = "  (target < 2 s: " + ("met" if bulk_s < 2 else "MISSED") + ")" if name == "sqlite" else ""
        print(f"{name:10s} bulk of {args.ports}: {r['bulk_seconds']:.2f} s = {r['bulk_ports_per_s']:.0f} ports/s"
              f"{target}")
        print(f"{name:10s} {args.clients} concurrent clients, {total} ports: {r['concurrent_seconds']:.2f} s = "
              f"{r['concurrent_ports_per_s']:.0f} ports/s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "api.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"figures saved to {out / 'api.json'}")
    _plot(results, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
