"""Drawing a volume's allocation map (``vmfs-debug IMAGE map [PATH] [-o map.png]``): as text on a
terminal, as a PNG with matplotlib.  The figures come from :mod:`vmfs.debug.allocmap`."""

from __future__ import annotations

from vmfs.debug.allocmap import FILE, FREE, POINTER, SYSTEM, TBZ, AllocationMap, FileExtents

#: text map characters per kind (files get letters)
CHARS = {FREE: ".", SYSTEM: "S", POINTER: "P", TBZ: "z"}
LETTERS = "abcdefghijklmnoprstuvwxy"
#: picture colours per kind (files get colours of the tab20 map)
COLOURS = {FREE: "#eeeeee", SYSTEM: "#555555", POINTER: "#8e44ad", TBZ: "#f4d03f"}
#: strength of each kind when several blocks share one cell of a large volume's map
RANK = {FREE: 0, SYSTEM: 1, POINTER: 2, TBZ: 3, FILE: 4}


def counted(n: int, noun: str) -> str:
    """``1 block``, ``2 blocks``: the figures are read by people first."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def title(amap: AllocationMap) -> str:
    f = amap.figures()
    return (f"{f['blocks_used']}/{f['blocks_total']} blocks used, {counted(f['files_with_blocks'], 'file')} in "
            f"{counted(f['file_extents'], 'extent')} ({f['fragmented_files']} fragmented), free space in "
            f"{counted(f['free_runs'], 'run')} (largest {f['largest_free_run']})")


def file_label(entry: FileExtents) -> str:
    """``/disk-flat.vmdk (8 blocks, 8 to be zeroed)``: a thick disk's blocks show as to-be-zeroed
    on the map, so the legend says they are the file's."""
    zero = sum(1 for _, _, z in entry.blocks if z)
    return f"{entry.path} ({counted(len(entry.blocks), 'block')}" + (f", {zero} to be zeroed)" if zero else ")")


def cells(amap: AllocationMap, count: int) -> list[tuple[str, int]]:
    """(kind, owner) of ``count`` cells covering the volume, each the strongest of its blocks."""
    per = -(-amap.total // count)
    out = []
    for start in range(0, amap.total, per):
        span = range(start, min(start + per, amap.total))
        best = max(span, key=lambda b: RANK[amap.kinds[b]])
        out.append((amap.kinds[best], amap.owner[best]))
    return out


def largest_files(amap: AllocationMap, limit: int) -> list[int]:
    """Indexes of the regular files with the most blocks (those get their own letter/colour)."""
    regular = [i for i, f in enumerate(amap.files) if f.blocks and not f.path.endswith(".sf")
               and not f.path.startswith("journal")]
    return sorted(regular, key=lambda i: -len(amap.files[i].blocks))[:limit]


def text_map(amap: AllocationMap, width: int = 64, rows: int = 32, only: int | None = None) -> str:
    """The map as lines of characters: one per block (or per group of blocks on a big volume)."""
    named = largest_files(amap, len(LETTERS))
    letter = {i: LETTERS[n] for n, i in enumerate(named)}
    grid = []
    for kind, owner in cells(amap, min(amap.total, width * rows)):
        if only is not None and owner != only:
            grid.append("." if kind == FREE else "#")
        elif kind == FILE:
            grid.append(letter.get(owner, "f"))
        else:
            grid.append(CHARS[kind])
    lines = ["".join(grid[i : i + width]) for i in range(0, len(grid), width)]
    per = -(-amap.total // min(amap.total, width * rows))
    scale = f"one character = {counted(per, 'block')} of {amap.block_size >> 10} KiB; . free  "
    if only is not None:
        mark = letter.get(only, "f")
        legend = [scale + f"# used by anything else  z to-be-zeroed  {mark} {file_label(amap.files[only])}"]
    else:
        legend = [scale + "S system  P pointer blocks  z to-be-zeroed  f other files"]
        legend += [f"  {letter[i]} {file_label(amap.files[i])}" for i in named]
    return "\n".join([title(amap), *lines, *legend])


def file_lines(entry: FileExtents, block_size: int) -> list[str]:
    """One file's extents, one line each."""
    out = [f"{entry.path}: {counted(len(entry.blocks), 'block')} in {counted(len(entry.extents), 'extent')}"]
    tbz = {b for _, b, z in entry.blocks if z}
    for n, (first, count) in enumerate(entry.extents):
        zero = sum(b in tbz for b in range(first, first + count))
        out.append(f"  extent {n}: volume blocks {first}-{first + count - 1} ({count} x {block_size >> 10} KiB)"
                   + (f", {zero} to-be-zeroed" if zero else ""))
    return out


def draw_png(amap: AllocationMap, path: str, only: int | None = None, width: int = 64) -> None:
    """The map as a picture: one square per block (or group), a legend and the figures in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    named = largest_files(amap, 16)
    palette = plt.get_cmap("tab20").colors
    kinds = [FREE, SYSTEM, POINTER, TBZ, "other files"]
    colours = [COLOURS[FREE], COLOURS[SYSTEM], COLOURS[POINTER], COLOURS[TBZ], "#85c1e9"]
    colour_of = {i: len(colours) + n for n, i in enumerate(named)}
    colours += [palette[n % len(palette)] for n in range(len(named))]
    values = []
    for kind, owner in cells(amap, min(amap.total, width * 64)):
        if kind == FILE and (only is None or owner == only):
            values.append(colour_of.get(owner, 4))
        elif kind == FILE:
            values.append(4)
        else:
            values.append(kinds.index(kind))
    rows = -(-len(values) // width)
    values += [0] * (rows * width - len(values))
    grid = [values[r * width : (r + 1) * width] for r in range(rows)]
    fig, ax = plt.subplots(figsize=(12, max(3.0, rows * 12 / width + 2)))
    ax.imshow(grid, cmap=ListedColormap(colours), vmin=0, vmax=len(colours) - 1, interpolation="nearest",
              aspect="equal")
    ax.set_xticks([])
    ax.set_yticks([])
    per = -(-amap.total // min(amap.total, width * 64))
    ax.set_title(title(amap) + f"\none square = {counted(per, 'block')} of {amap.block_size >> 10} KiB", fontsize=9)
    handles = [Patch(color=c, label=k) for k, c in zip(kinds, colours, strict=False)]
    handles += [Patch(color=colours[colour_of[i]], label=file_label(amap.files[i]))
                for i in named]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.savefig(path, bbox_inches="tight", dpi=100)
    plt.close(fig)
