"""Register the simulator as ``nki`` for this test package (no real SDK exists on these hosts)."""

import dste.nkisim

dste.nkisim.install()
