"""Target boards: FPGA part and resource capacity, taken from FINN's own platform tables.

Pynq-Z1 and Pynq-Z2 both carry a Zynq-7020 (xc7z020clg400-1): 53,200 LUT,
106,400 FF, 280 BRAM18, 220 DSP, no URAM. The budget check compares FINN's
estimated totals with these figures.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnflow.errors import BnnflowError

#: Boards ``bnnflow build --board`` accepts (PYNQ boards of FINN's Zynq flow).
BOARDS = ("Pynq-Z1", "Pynq-Z2")
#: Resources held against the budget (FINN's names in estimate_layer_resources.json).
RESOURCES = ("LUT", "BRAM_18K", "URAM", "DSP")


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    capacity: dict[str, int]  # LUT, FF, BRAM_18K, URAM, DSP


def get_board(name: str) -> Board:
    """The board ``name`` with its part and resources (FINN's ``pynq_part_map`` and ``platforms``)."""
    if name not in BOARDS:
        raise BnnflowError(f"unknown board {name!r}: choose one of {', '.join(BOARDS)}")
    from finn.util.basic import pynq_part_map
    from finn.util.platforms import platforms

    slrs = platforms[name]().resource_count_dict
    capacity = {k: sum(int(s[k]) for s in slrs.values()) for k in next(iter(slrs.values()))}
    return Board(name=name, part=pynq_part_map[name], capacity=capacity)
