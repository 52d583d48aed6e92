"""The seed's examples on the local backend: sums, a dependency chain, MPI ranks, the cache."""

import os
import shutil

from executorlib import Executor


def add_funct(a, b):
    return a + b


def calc(i):
    from mpi4py import MPI

    size = MPI.COMM_WORLD.Get_size()
    rank = MPI.COMM_WORLD.Get_rank()
    return i, size, rank


if __name__ == "__main__":
    with Executor(backend="local", cache_directory="./cache") as exe:
        future_lst = [exe.submit(sum, [i, i]) for i in range(1, 4)]
        print("sums:", [f.result() for f in future_lst])

        future = 0
        for i in range(4, 8):
            future = exe.submit(add_funct, i, future)  # Future arguments are dependencies
        print("chain:", future.result())

        fs = exe.submit(calc, 3, resource_dict={"cores": 2})  # two MPI ranks
        print("mpi:", fs.result())

    # a second Executor on the same cache returns the results without running anything
    with Executor(backend="local", cache_directory="./cache") as exe:
        print("from the cache:", exe.submit(sum, [1, 1]).result())

    print("cache:", sorted(os.listdir("./cache"))[:3], "...")
    shutil.rmtree("./cache")
