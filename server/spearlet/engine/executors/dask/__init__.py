"""The Dask executor (``--executor dask``): every call runs on a Dask cluster.

:mod:`.executor` is the spearlet's side (:class:`DaskExecutor`), :mod:`.runner` what runs inside a Dask
worker, :mod:`.plugin` the WorkerPlugin that stops cancelled calls, :mod:`.cluster` a local cluster and
the figures of a cluster. It needs ``distributed`` (``pip install "spear-lab[dask]"``).
"""
