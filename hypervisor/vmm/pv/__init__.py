"""Paravirtualization (Xen's method): the hypercall table and the `pv` execution mode."""
