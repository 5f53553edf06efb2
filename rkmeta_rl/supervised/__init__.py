"""Supervised meta-learning benchmarks (paper Tables 2 and 3) on the shared RK meta-gradient.

Data: ``sinusoid`` (regression tasks), ``omniglot`` and ``miniimagenet`` (loaders),
``fewshot`` (N-way K-shot tasks over a dataset of classes). Models: ``models`` (the 40-40
MLP and the 4-block conv net, functional with per-task parameters). Learning: ``meta``
(one RK meta-step with Adam, test-time adaptation), ``benchmarks`` (model and task
streams per benchmark), ``config``, ``trainer``, ``evaluate`` and ``cli``.
"""
