"""
The batch engine behind :class:`~airflow_provider_apicore.operators.batch_describe.MJBatchDescribeOperator`
and :class:`~airflow_provider_apicore.operators.batch_imagine.MJBatchImagineOperator`.

* :mod:`.planner`: listing the source and planning against the manifest
* :mod:`.loop`: the submit/poll loop (:class:`~.loop.BatchLoop`)
* :mod:`.actions`: what differs per action (payload, schema, endpoint, result mapper): describe, imagine
* :mod:`.submit`: what a failed submission means (:func:`~.submit.classify`)
* :mod:`.lease`: one writer per manifest (:class:`~.lease.ManifestLease`)
* :mod:`.errors`: the engine's errors
* the manifest store itself is :mod:`airflow_provider_apicore.manifest`
"""
