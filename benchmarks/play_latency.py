"""`reverie play` over a real WebSocket: frames/s delivered and key-to-frame latency (CPU).

Runs the same app as `reverie play` (uvicorn on a background thread of this process), connects
clients that behave like the page (each frame acknowledged on arrival), starts procedural scene
`--scene` and changes the held keys every `--switch` seconds plus a uniform jitter of up to
`--jitter` seconds (seeded), along a fixed schedule (W, none, left, D+up, S, Q+right, ...). The
jitter lets key changes land at every phase of the block clock, as a person's do: with a fixed
period that is a multiple of the block time (2.5 s = 10 blocks at 16 fps) every change would
meet the same phase and the median would measure one point of the distribution. Measured
after `--warmup` seconds, for `--seconds`:

- `delivered_fps`: frames received per second of wall time, per client;
- `latency_ms`: key-to-frame latency, client clock: from sending key message `seq = k` to
  receiving the first frame generated with it (header `seq >= k`). It includes waiting for the
  step in progress, the step, JPEG encoding, pacing and the socket; median and p90 over all
  key changes;
- `step_ms`: engine time of one `Session.step` (`frames_per_step` frames) from the frame headers,
  and `dropped`: frames the server dropped for the client.

With `--clients 1,2` the run repeats with two concurrent sessions (the CPU default limit).
The JSON records the load average: compare runs with a similar one.

    python benchmarks/play_latency.py --models random --out benchmarks/results/play_latency.json
    python benchmarks/play_latency.py --models random,default --seconds 60 --clients 1,2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import threading
import time
from datetime import date

import numpy as np
import torch
from websockets.sync.client import connect

from reverie.io import atomic_write_json
from reverie.play.cli import load_model
from reverie.play.protocol import unpack_frame
from reverie.play.server import create_app, serve_in_background
from reverie.runtime import setup_runtime

KEY_SCHEDULE = (
    ["KeyW"],
    [],
    ["ArrowLeft"],
    ["KeyD", "ArrowUp"],
    ["KeyS"],
    ["KeyQ", "ArrowRight"],
    [],
    ["KeyR", "KeyA"],
)


def run_client(url: str, args: argparse.Namespace, out: dict, seed: int = 0) -> None:
    """One session: start, warm up, then hold keys along KEY_SCHEDULE; fills ``out``."""
    rng = random.Random(seed)
    latencies, steps, arrivals, key_ages = [], [], [], []
    sent: dict[int, float] = {}
    dropped = 0
    with connect(url.replace("http", "ws") + "/ws", max_size=None) as ws:
        hello = json.loads(ws.recv(timeout=30))
        if hello["type"] != "hello":
            raise RuntimeError(f"no session: {hello}")
        ws.send(json.dumps({"type": "start", "scene_seed": args.scene, "memory": args.memory}))
        t_measure = t_end = next_switch = None
        seq = 0
        while True:
            now = time.monotonic()
            if t_end is not None and now >= t_end:
                break
            if next_switch is not None and now >= next_switch:
                seq += 1
                keys = KEY_SCHEDULE[seq % len(KEY_SCHEDULE)]
                ws.send(json.dumps({"type": "keys", "keys": keys, "seq": seq}))
                sent[seq] = time.monotonic()
                next_switch += args.switch + rng.uniform(0.0, args.jitter)
            timeout = 60.0 if next_switch is None else max(1e-3, min(next_switch, t_end) - now)
            try:
                message = ws.recv(timeout=timeout)
            except TimeoutError:
                continue
            now = time.monotonic()
            if isinstance(message, str):
                event = json.loads(message)
                if event["type"] == "error":
                    raise RuntimeError(event["message"])
                if event["type"] == "ready":  # keys start changing after the warm-up
                    t_measure = now + args.warmup
                    t_end = t_measure + args.seconds
                    next_switch = t_measure
                continue
            header, _ = unpack_frame(message)
            ws.send(json.dumps({"type": "ack", "frame": header["frame"]}))
            if t_measure is None or now < t_measure:
                continue
            arrivals.append(now)
            dropped = header["dropped"]
            if header["step_ms"]:
                steps.append(header["step_ms"])
            for k in [k for k in sent if k <= header["seq"]]:
                latencies.append(1000 * (now - sent.pop(k)))
                key_ages.append(header["key_age_ms"])
    out.update(
        frames=len(arrivals),
        delivered_fps=round(len(arrivals) / args.seconds, 2),
        latency_ms=summary(latencies),
        server_key_age_ms=summary([a for a in key_ages if a is not None]),
        step_ms=summary(steps),
        key_changes=seq,
        dropped=dropped,
    )


def summary(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 1),
        "p90": round(float(np.percentile(values, 90)), 1),
        "max": round(max(values), 1),
    }


def run(model, clients: int, args: argparse.Namespace) -> dict:
    app = create_app(lambda: model, max_sessions=clients, default_memory=args.memory)
    results = [{} for _ in range(clients)]
    errors = []

    def client(i: int) -> None:
        try:
            run_client(url, args, results[i], seed=i)
        except Exception as e:  # reported in the JSON, the other clients go on
            errors.append(repr(e))

    with serve_in_background(app) as url:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise RuntimeError(f"client failed: {errors}")
    all_latencies = [r["latency_ms"] for r in results]
    return {
        "clients": clients,
        "delivered_fps_per_client": [r["delivered_fps"] for r in results],
        "latency_ms_median": [m.get("median") for m in all_latencies],
        "latency_ms_p90": [m.get("p90") for m in all_latencies],
        "per_client": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="random", help="comma list: random, default, PATH")
    parser.add_argument("--clients", default="1,2", help="comma list of concurrent sessions")
    parser.add_argument("--memory", default="relic")
    parser.add_argument("--scene", type=int, default=7, help="procedural scene seed")
    parser.add_argument("--seconds", type=float, default=40.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--switch", type=float, default=2.5, help="seconds between key changes")
    parser.add_argument(
        "--jitter", type=float, default=0.25, help="uniform extra seconds per key change"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (as reverie play)")
    parser.add_argument("--out", default=None, help="write the JSON here")
    args = parser.parse_args()
    setup_runtime(threads=args.threads, log_level="WARNING")
    load_before = os.getloadavg()
    result = {
        "benchmark": "play_latency",
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "memory": args.memory,
        "scene_seed": args.scene,
        "seconds": args.seconds,
        "warmup_s": args.warmup,
        "switch_s": args.switch,
        "jitter_s": args.jitter,
        "load_average_before": [round(x, 2) for x in load_before],
        "models": {},
    }
    for name in args.models.split(","):
        try:
            model = load_model(
                None if name == "default" else name, random=name == "random", device="cpu"
            )
        except FileNotFoundError as e:
            result["models"][name] = {"skipped": str(e)}
            continue
        entry = {
            "source": model.source,
            "resolution": model.resolution,
            "fps": model.fps,
            "frames_per_step": model.frames_per_step,
            "runs": [run(model, int(c), args) for c in args.clients.split(",")],
        }
        result["models"][name] = entry
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))
    if args.out:
        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
