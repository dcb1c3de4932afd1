"""The pipeline: resolves identity and sessions for incoming events and writes them."""

from footfall.pipeline.ingest import IngestReport, Pipeline

__all__ = ["IngestReport", "Pipeline"]
