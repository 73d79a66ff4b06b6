"""Prometheus metrics, one registry per runtime (no process-global collectors)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Every minimill metric, labelled by model. Engines write, `GET /metrics` reads `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r, model = self.registry, ["model"]
        self.queue_length = Gauge("minimill_queue_length", "Requests waiting for a slot", model, registry=r)
        self.running = Gauge("minimill_running_sequences", "Sequences computing", model, registry=r)
        self.retained = Gauge("minimill_retained_sequences", "Finished sequences kept for prefix reuse",
                              model, registry=r)
        self.kv_used = Gauge("minimill_kv_cells_used", "KV cells holding a token", model, registry=r)
        self.kv_total = Gauge("minimill_kv_cells_total", "KV cells in the context", model, registry=r)
        self.kv_usage = Gauge("minimill_kv_usage_ratio", "Used / total KV cells", model, registry=r)
        self.prompt_tokens = Counter("minimill_prompt_tokens", "Prompt tokens admitted", model, registry=r)
        self.cached_tokens = Counter("minimill_prefix_cached_tokens",
                                     "Prompt tokens whose KV was reused", model, registry=r)
        self.prefix_hit_rate = Gauge("minimill_prefix_hit_rate", "Reused / admitted prompt tokens",
                                     model, registry=r)
        self.generated_tokens = Counter("minimill_generated_tokens", "Tokens sampled", model, registry=r)
        self.computed_tokens = Counter("minimill_computed_tokens", "Tokens run through the model",
                                       model, registry=r)
        self.tokens_per_second = Gauge("minimill_tokens_per_second",
                                       "Tokens sampled per second over the last steps", model, registry=r)
        self.ttft = Histogram("minimill_time_to_first_token_seconds", "Submit to first token",
                              model, buckets=TTFT_BUCKETS, registry=r)
        self.preemptions = Counter("minimill_preemptions", "Running sequences preempted", model, registry=r)
        self.aborted_steps = Counter("minimill_batch_steps_interrupted",
                                     "Steps of batch work cut short by an online request", model, registry=r)
        self.engine_process_restarts = Counter("minimill_engine_process_restarts", "Times an engine process died "
                                               "(crash, OOM kill, SIGKILL) and was started again", model, registry=r)
        self.engine_restarts = Counter("minimill_engine_restarts", "Times an engine loop failed, failed what was "
                                       "live and reset its KV", model, registry=r)
        self.evictions = Counter("minimill_prefix_evictions", "Retained prefixes evicted", model, registry=r)
        self.decode_steps = Counter("minimill_decode_steps", "Engine steps that decoded tokens", model, registry=r)
        self.step_kv_cells = Counter("minimill_decode_kv_cells", "KV cells in use at each decoding step, summed: "
                                     "attention spans them, so / decode_steps is what an average step attends",
                                     model, registry=r)
        tier = ["model", "tier"]
        # Tier figures are monotonic totals kept by the tier store; exported as gauges set from them.
        self.tier_bytes = Gauge("minimill_kv_tier_bytes", "Bytes of pinned KV per tier (live, ram, disk)",
                                tier, registry=r)
        self.tier_hits = Gauge("minimill_kv_tier_hits_total", "Named KV entries loaded from a tier", tier,
                               registry=r)
        self.tier_evictions = Gauge("minimill_kv_tier_evictions_total", "Entries moved out of a tier", tier,
                                    registry=r)
        self.tier_misses = Gauge("minimill_kv_tier_misses_total", "Named KV entries found in no tier", model,
                                 registry=r)
        self.tier_corrupt = Gauge("minimill_kv_tier_corrupt_files_total",
                                  "Tier files dropped as truncated, corrupted or foreign", model, registry=r)
        self.tier_write_errors = Gauge("minimill_kv_tier_write_errors_total",
                                       "Disk tier writes that failed (a full disk turns the tier off)", model,
                                       registry=r)
        self.disk_tier_enabled = Gauge("minimill_kv_disk_tier_enabled", "1 while the disk tier is written", model,
                                       registry=r)
        self.tier_hit_rate = Gauge("minimill_kv_tier_hit_rate",
                                   "Share of named KV lookups served by each tier (live, ram, disk)", tier,
                                   registry=r)
        # Finished prefixes saved to RAM when they leave the live KV (automatic reuse, no name), totals as gauges.
        self.saved_prefixes = Gauge("minimill_ram_prefixes", "Finished prefixes held in RAM off the live KV", model,
                                    registry=r)
        self.saved_prefix_bytes = Gauge("minimill_ram_prefix_bytes", "Bytes of finished prefixes held in RAM", model,
                                        registry=r)
        self.saved_prefix_saves = Gauge("minimill_ram_prefix_saves_total",
                                        "Finished prefixes saved to RAM on leaving the live KV", model, registry=r)
        self.saved_prefix_hits = Gauge("minimill_ram_prefix_hits_total",
                                       "Finished prefixes loaded back from RAM for a prompt", model, registry=r)
        self.saved_prefix_hit_tokens = Gauge("minimill_ram_prefix_hit_tokens_total",
                                             "Prompt tokens reused from prefixes loaded back from RAM", model,
                                             registry=r)
        self.saved_prefix_evictions = Gauge("minimill_ram_prefix_evictions_total",
                                            "Finished prefixes dropped from RAM past its byte budget", model,
                                            registry=r)
        self.disk_prefix_saves = Gauge("minimill_disk_prefix_saves_total",
                                       "Finished prefixes written to disk on falling out of RAM", model, registry=r)
        self.disk_prefix_hits = Gauge("minimill_disk_prefix_hits_total",
                                      "Finished prefixes read back from disk for a prompt", model, registry=r)
        self.disk_prefix_bytes = Gauge("minimill_disk_prefix_bytes", "Bytes of finished prefixes on disk", model,
                                       registry=r)
        self.requests = Counter("minimill_requests", "Finished requests", ["model", "outcome"], registry=r)
        source = ["model", "method"]
        self.spec_drafted = Counter("minimill_spec_drafted_tokens", "Speculative draft tokens verified, by where "
                                    "they came from (ngram: prompt lookup, prediction: Predicted Outputs)", source,
                                    registry=r)
        self.spec_accepted = Counter("minimill_spec_accepted_tokens", "Draft tokens the samples kept", source,
                                     registry=r)
        self.spec_acceptance = Gauge("minimill_spec_acceptance_rate", "Kept / drafted tokens since start", source,
                                     registry=r)

    def exposition(self, engine_texts: Iterable[bytes] = ()) -> bytes:
        """This registry's text exposition with the engine processes' samples merged in: each engine process
        keeps its own registry, and one family must appear once however many models report it."""
        families = {family.name: family for family in self.registry.collect()}
        for text in engine_texts:
            for family in text_string_to_metric_families(text.decode("utf-8")):
                known = families.setdefault(family.name, family)
                if known is not family:
                    known.samples.extend(family.samples)
        merged = CollectorRegistry()
        merged.register(_Families(list(families.values())))
        return generate_latest(merged)


class _Families:
    """A collector that yields fixed metric families (for `Metrics.exposition`)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        """The families, as given."""
        return iter(self.families)
