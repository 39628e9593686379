"""Run edgecap on a device's CPU without the device: an emulated aarch64 userland (qemu-user) with the wheels a
Raspberry Pi installs. TensorFlow-free.

    emulation.py  build and cache the emulated Debian-bookworm Python 3.11 + the device install; run commands in it
    check.py      caption studies under emulation and on the host, compare the tokens (`edgecap device-check`)
"""
