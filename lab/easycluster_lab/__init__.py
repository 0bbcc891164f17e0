"""easycluster's test equipment: a lab of real SSH hosts (systemd-nspawn) on one machine.

Not part of the product: installed for development and tests (`make setup`), never imported
by `easycluster`. Its tasks reach `fab` through the `easycluster.collections` entry point.
"""

from .lab import Lab, LabError, cgroup_roots

__all__ = ["Lab", "LabError", "cgroup_roots"]
