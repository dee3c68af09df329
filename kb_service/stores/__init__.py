"""Vector stores: one typed interface (``stores.base.VectorStore``), two real backends (Milvus, pgvector), opened by
``stores.factory.open_store``. Import the modules themselves: this package imports nothing, so the Milvus Lite child
(``python -m kb_service.stores.milvus_lite_server``) loads neither backend."""
