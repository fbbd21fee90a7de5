"""Root-cause analysis: evidence of one incident → an explanation, from an LLM or the offline knowledge base.

``build_evidence`` redacts and trims an incident's failures into `Evidence`; ``RcaEngine.analyse`` answers
with an `RcaResult` (and a `CallRecord` of the model call). The rules knowledge base (``knowledge.yaml``)
answers when no model is configured, and whenever the model path fails.
"""

from poller.rca.engine import RcaEngine
from poller.rca.evidence import Evidence, EvidenceLimits, build_evidence
from poller.rca.knowledge import KnowledgeBase, KnowledgeMatch, MatchLevel, default_knowledge, load_knowledge
from poller.rca.redact import redact_text, redact_tree, redacted
from poller.rca.result import CallRecord, CallStatus, Category, RcaResult

__all__ = [
    "CallRecord",
    "CallStatus",
    "Category",
    "Evidence",
    "EvidenceLimits",
    "KnowledgeBase",
    "KnowledgeMatch",
    "MatchLevel",
    "RcaEngine",
    "RcaResult",
    "build_evidence",
    "default_knowledge",
    "load_knowledge",
    "redact_text",
    "redact_tree",
    "redacted",
]
