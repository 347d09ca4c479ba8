"""Server metrics in the Prometheus text format (GET /metrics): requests, tokens, latency, requests running."""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/models", "/health", "/metrics")


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    total: float = 0.0
    n: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS, value)] += 1
        self.total += value
        self.n += 1


class Metrics:
    """Counters kept by the server's middleware and routes (one event loop: no locks needed)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.latency: dict[str, _Histogram] = defaultdict(_Histogram)
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.running = 0
        self.aborted = 0

    @staticmethod
    def endpoint(path: str) -> str:
        return path if path in ENDPOINTS else "other"

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        endpoint = self.endpoint(path)
        self.requests[(endpoint, status)] += 1
        self.latency[endpoint].observe(seconds)

    def add_tokens(self, prompt: int, generated: int) -> None:
        self.prompt_tokens += prompt
        self.generation_tokens += generated

    def render(self) -> str:
        lines = ["# HELP swift_requests_total HTTP requests by endpoint and status code.",
                 "# TYPE swift_requests_total counter"]
        for (endpoint, status), count in sorted(self.requests.items()):
            lines.append(f'swift_requests_total{{endpoint="{endpoint}",status="{status}"}} {count}')
        for name, value, help_text, kind in (
                ("swift_prompt_tokens_total", self.prompt_tokens, "Prompt tokens of answered requests.", "counter"),
                ("swift_generation_tokens_total", self.generation_tokens, "Tokens generated.", "counter"),
                ("swift_requests_aborted_total", self.aborted, "Generations cancelled by a client leaving.",
                 "counter"),
                ("swift_requests_running", self.running, "Generation requests in flight.", "gauge")):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        lines += ["# HELP swift_request_latency_seconds Time from request to the end of its response.",
                  "# TYPE swift_request_latency_seconds histogram"]
        for endpoint, histogram in sorted(self.latency.items()):
            cumulative = 0
            for bound, count in zip((*LATENCY_BUCKETS, float("inf")), histogram.counts, strict=True):
                cumulative += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                lines.append(f'swift_request_latency_seconds_bucket{{endpoint="{endpoint}",le="{le}"}} {cumulative}')
            lines.append(f'swift_request_latency_seconds_sum{{endpoint="{endpoint}"}} {histogram.total:.6f}')
            lines.append(f'swift_request_latency_seconds_count{{endpoint="{endpoint}"}} {histogram.n}')
        return "\n".join(lines) + "\n"
