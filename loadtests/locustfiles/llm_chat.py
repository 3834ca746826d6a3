"""llm: OpenAI-compatible chat calls (streamed and not) to an LLM function through `llm.<domain>`."""

import fngate.loadtests.plugin  # noqa: F401  (final CSV write)
from fngate.loadtests.llm_user import LlmUser  # noqa: F401
