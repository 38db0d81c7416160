"""AWS IAM as data: policy documents (:mod:`.documents`) and AWS's catalogue of actions (:mod:`.actions`).

Plain Python, no pytest and no I/O beyond reading packaged data: both the checks and the
sandbox use it.
"""
