"""A storm of N failures from 40 causes through the processor: incidents, one RCA each, local tickets.

Run:  python bench/incident_storm.py --failures 10000 [--provider rules|openai]
With --provider openai the RCA calls go to the bundled OpenAI emulator; the script counts them there.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from poller.config import RcaConfig  # noqa: E402
from poller.emulators.openai_api import OpenAIEmulator  # noqa: E402
from poller.incidents import Processor  # noqa: E402
from poller.rca import RcaEngine  # noqa: E402
from poller.store import IncidentRow, Store  # noqa: E402
from tests.storm import START, storm  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--failures", type=int, default=10_000)
    parser.add_argument("--causes", type=int, default=40)
    parser.add_argument("--provider", choices=["rules", "openai"], default="rules")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, OpenAIEmulator() as llm:
        store = Store(f"sqlite:///{tmp}/storm.db")
        failures = list(storm(args.failures, args.causes))
        for i in range(0, len(failures), 5000):
            with store.tick("storm", START) as tx:
                tx.add_failures(failures[i : i + 5000])
        if args.provider == "openai":
            os.environ["OPENAI_API_KEY"] = llm.api_key
            config = RcaConfig(provider="openai", base_url=llm.url + "/v1", model="gpt-4o-mini", max_retries=0)
        else:
            config = RcaConfig()
        processor = Processor(engine=RcaEngine(config))
        started = time.perf_counter()
        stats = processor.run(store, START + timedelta(hours=1))
        seconds = time.perf_counter() - started
        print(json.dumps({
            "provider": args.provider, "failures": stats.grouped, "incidents": store.count(IncidentRow),
            "llm_requests": llm.count(), "seconds": round(seconds, 2),
            "failures_per_second": round(stats.grouped / seconds),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }))


if __name__ == "__main__":
    main()
