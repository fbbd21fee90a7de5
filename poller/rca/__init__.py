"""Root-cause analysis. For now the offline rules table only; LLM providers come with incidents."""
