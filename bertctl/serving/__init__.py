"""`bertctl serve`: a trained classifier behind HTTP, many small requests batched into few forward passes.

    serving.app      routes, metrics, the access log, the process (`serve`)
    serving.batcher  the model (`Backend`), the bounded queue and the one batching task
"""
