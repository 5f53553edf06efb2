"""The RK meta-gradient for any ``torch.nn.Module``, in the style of learn2learn's
``MAML(model, lr)``.

    learner = RKMetaLearner(model, method="ralston", inner_lr=0.01)
    opt = torch.optim.Adam(learner.parameters(), lr=1e-3)
    loss = learner(tasks, support_loss, query_loss)   # a scalar
    opt.zero_grad(); loss.backward(); opt.step()       # .grad = mean over tasks of Σ a_i k_i

The model is evaluated with explicit parameters, so no model code changes.
``support_loss(model, task)`` and ``query_loss(model, task)`` are yours: ``model`` is the
module evaluated at a stage point, ``task`` one task's data; each returns a scalar. Stage
1's loss is the support loss at θ, stage i > 1's the query loss at θ_i (docs/method.md,
"What the stage losses are"); ``stage_loss(i, model, task)`` may replace the two.

All tasks at once. ``tasks`` is a list of per-task items (tuples, lists, dicts or
dataclasses of tensors): the learner stacks them and evaluates every task's stage loss in
one call of ``torch.func.vmap``, with parameters that carry a leading task dimension T
(``rk.repeat_params``); the stage points of all tasks are built at once. The loss functions
still see one task. Data that already has the task dimension skips the stacking:
``learner(batch, support_loss, query_loss, stacked=True)``, ``batch`` one item whose
tensors are (T, ...) (other values in it are shared by every task). With
``batched_losses=True`` the losses get the stacked batch and a model over tasks (inputs
and outputs (T, ...)) and return the T losses (T,): for losses that are cheaper written
for all tasks at once. Random operations draw for each task on its own
(``randomness="different"``).

Speed. Inside vmap, ``nn.Linear``, ``nn.Conv2d``, batch norm and ``nn.MaxPool2d`` (the
modules, not subclasses with a forward of their own) compute the hand-written products of
a task-batched model (:class:`~rkmeta_rl.learner.task_layers.TaskLayers`: a batched
matrix product; one convolution with a group per task); everything else takes vmap's own
rules. A module may also define
``forward_per_task(params, *inputs)`` (parameters and inputs (T, ...)), which the learner
then calls instead of vmap where it can (``supervised.models.MLP``: at this size the cost
of a vmapped call is most of the time). ``scripts/bench_learner.py`` measures it.

When the tasks cannot be batched (their tensors differ in shape, or vmap cannot run the
module or the losses: data-dependent control flow, ``.item()``, a buffer other than batch
norm's running statistics updated in place) the learner evaluates the tasks one at a time,
as it did before, and says why in one warning (once: it stays on that path);
``vectorize=False`` chooses that without a warning, ``vectorize=True`` raises instead.

Buffers are the module's own and are not adapted. A batch-norm layer in training mode
normalises with the statistics of the batch it sees, as MAML does (transductive: each task
and each of its support and query sets uses its own). If it keeps running averages it also
updates them as a side effect: one task at a time, they move after every task's evaluation;
all tasks at once, every evaluation moves them by the mean over tasks of the tasks' own
updates. Put the module in ``eval()`` mode to use the running averages instead.

Where each part lives: :mod:`~rkmeta_rl.learner.meta_learner` (the learner),
:mod:`~rkmeta_rl.learner.losses` (the stage losses, one task or all),
:mod:`~rkmeta_rl.learner.tasks` (stacking the tasks), :mod:`~rkmeta_rl.learner.per_task`
(a module evaluated with per-task parameters), :mod:`~rkmeta_rl.learner.task_layers`
(the hand-written task-batched layers) and :mod:`~rkmeta_rl.learner.vmap_primitives`
(torch's vmap primitives, and the public vmap where they are missing).
"""

from rkmeta_rl.learner.losses import StageLoss, TaskLoss
from rkmeta_rl.learner.meta_learner import RKMetaLearner
from rkmeta_rl.learner.per_task import call_per_task

__all__ = ["RKMetaLearner", "StageLoss", "TaskLoss", "call_per_task"]
