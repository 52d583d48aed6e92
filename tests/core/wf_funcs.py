"""Module-level functions for the workflow export tests (the PWD names functions by import path)."""


def get_prod_and_div(x, y):
    return {"prod": x * y, "div": x / y}


def get_sum(x, y):
    return x + y


def get_square(x):
    return x ** 2


def total(values, offset=0):
    return sum(values) + offset


def pair(a, b):
    return a, b


def merge(**parts):
    return dict(parts)


def only_positional(a, /):
    return a
