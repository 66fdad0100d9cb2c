"""Data-parallel training through ``accelerate``: one process on a CPU, one per GPU under
``accelerate launch``.

Every process trains on its share of each epoch's batches and DDP averages the gradients, so
the replicas stay identical; whatever touches storage or disk (reading labels, export, the
registry, the report) runs on the main process only, and the main process hands the data it
read to the others (``share``). A plain ``python`` run is one process and all of this is a
no-op.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def accelerator():
    """The process's ``Accelerator`` (it sets up the process group once per process).

    ``cpu`` where torch sees no GPU: accelerate then forms a gloo group of CPU processes when
    launched with several (without it, CPU processes would each train alone)."""
    import torch
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def is_main() -> bool:
    return accelerator().is_main_process


def shard(batches: list) -> list:
    """This process's batches of an epoch: every n-th, the same count on every process.

    DDP all-reduces at each backward, so a process with one step more than the others would
    wait for them forever; the last ``len % n`` batches of an epoch are dropped instead (the
    next epoch shuffles differently, so no example is always left out)."""
    acc = accelerator()
    n = acc.num_processes
    if n == 1:
        return batches
    usable = len(batches) // n * n
    if usable == 0:
        raise ValueError(f"{len(batches)} batches cannot feed {n} processes: lower the batch size")
    return batches[acc.process_index:usable:n]


def steps_per_epoch(n_items: int, batch_size: int) -> int:
    """How many batches :func:`shard` gives this process per epoch (for the LR schedule)."""
    batches = -(-n_items // batch_size)
    n = accelerator().num_processes
    return batches if n == 1 else batches // n


def share(value):
    """The main process's ``value`` on every process (other processes pass None)."""
    acc = accelerator()
    if acc.num_processes == 1:
        return value
    from accelerate.utils import broadcast_object_list

    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def prepare(model, optimizer):
    """Model (on the process's device, DDP-wrapped when there are several) and optimizer."""
    return accelerator().prepare(model, optimizer)


def unwrap(model):
    return accelerator().unwrap_model(model)


def backward(loss) -> None:
    accelerator().backward(loss)


def device():
    return accelerator().device
