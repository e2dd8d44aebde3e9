"""Platform bench: an empty grpc.aio echo server vs the same no-op RPC through
the production interceptor chain (target: chain keeps >= 85% of the throughput)."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp

import grpc
import grpc.aio

from tests.bench.harness import LoadResult, median_result, report, run_load, start_in_child

METHOD = "/bench.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def serve_echo(port_queue: mp.Queue, with_chain: bool) -> None:
    async def main() -> None:
        from the0.server.app import interceptor_chain
        from the0.server.structured_logging import configure_logging

        # Production logging (one JSON line per RPC) into /dev/null: its cost counts.
        configure_logging("INFO")
        logging.getLogger().handlers[0].stream = open("/dev/null", "w")  # noqa: SIM115, ASYNC230  never blocks
        server = grpc.aio.server(interceptors=interceptor_chain() if with_chain else None)
        handler = grpc.method_handlers_generic_handler("bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(_echo)})
        server.add_generic_rpc_handlers((handler,))
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        port_queue.put(port)
        await server.wait_for_termination()

    asyncio.run(main())


async def measure(port: int, *, seconds: float, concurrency: int) -> LoadResult:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(METHOD)
        await run_load(lambda: echo(b"ping"), concurrency=concurrency, seconds=0.5)  # warm-up
        return await run_load(lambda: echo(b"ping"), concurrency=concurrency, seconds=seconds)


async def run(*, seconds: float = 3.0, rounds: int = 3, concurrency: int = 32) -> float:
    baseline_proc, baseline_port = start_in_child(serve_echo, False)
    chain_proc, chain_port = start_in_child(serve_echo, True)
    try:
        results: dict[str, list[LoadResult]] = {"empty echo server (baseline)": [], "no-op RPC, full chain": []}
        for _ in range(rounds):
            results["empty echo server (baseline)"].append(await measure(baseline_port, seconds=seconds, concurrency=concurrency))
            results["no-op RPC, full chain"].append(await measure(chain_port, seconds=seconds, concurrency=concurrency))
    finally:
        baseline_proc.terminate()
        chain_proc.terminate()
    rows = {name: median_result(r) for name, r in results.items()}
    return report("interceptor chain overhead", rows, baseline="empty echo server (baseline)",
                  target="full chain >= 0.85 of baseline throughput")
