"""Our retrieval pipeline inside other frameworks: a LangChain retriever and a LlamaIndex retriever (optional
extras ``langchain`` and ``llamaindex``). Both search through a :class:`client.KBClient`, in-process or over HTTP."""
