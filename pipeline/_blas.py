"""How many threads BLAS may use where many small matrix products run."""


def one_blas_thread():
    """Limit BLAS to one thread: on the small matrices of a feature cache, a
    multi-threaded BLAS makes lbfgs about ten times slower (see BENCHMARKS.md).
    OpenMP, which the gradient-boosted trees use well, is left alone."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")
