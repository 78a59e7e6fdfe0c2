"""The import plan of ../shared/DESIGN.md, read from its table, and a check of the imports of blindsr/ against it.

`read_plan(design)` -> {module: modules it may import}; `violations(package_dir, plan)` -> one line per import that
breaks the plan (every import statement counts, at module level or inside a function)."""
import ast
import re
from pathlib import Path

OWN = 'own'   # marks a row whose modules may import each other ("models' own modules")


def read_plan(design: Path) -> dict:
    "The table's rows: 'blindsr.data' -> {'blindsr.core', ...}; a row 'blindsr.models.*' covers the whole package."
    plan = {}
    for line in Path(design).read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) != 4 or not cells[1].startswith('blindsr.'): continue
        module = cells[1].split()[0].removesuffix('.*')
        allowed = set()
        for part in re.split(r',\s*', cells[3]):
            part = part.strip().removeprefix('and ').strip()
            if part in ('–', '-', ''): continue
            if "own modules" in part: allowed.add(OWN); continue
            if not re.fullmatch(r'[a-z_]+', part): raise ValueError(f"{design}: cannot read {part!r} in the row of {module}")
            allowed.add(f'blindsr.{part}')
        plan[module] = allowed
    if not plan: raise ValueError(f"{design}: no table of modules found")
    return plan


def module_name(path: Path, package_dir: Path) -> str:
    rel = path.relative_to(package_dir.parent).with_suffix('')
    parts = list(rel.parts)
    if parts[-1] == '__init__': parts = parts[:-1]
    return '.'.join(parts)


def unit(module: str, plan: dict) -> str | None:
    "The row of the plan a module belongs to ('blindsr.models.dasr' -> 'blindsr.models'), None if none."
    for m in sorted(plan, key=len, reverse=True):
        if module == m or module.startswith(m + '.'): return m
    return None


def imports(path: Path, package_dir: Path) -> list:
    "(line, imported module) of every blindsr import in the file, relative imports resolved."
    name = module_name(path, package_dir)
    package = name if path.name == '__init__.py' else name.rsplit('.', 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ''
            if node.level:
                up = package.split('.')[:len(package.split('.')) - node.level + 1]
                base = '.'.join(up + ([base] if base else []))
            # `from blindsr import distributed` imports the module blindsr.distributed
            for a in node.names:
                sub = f'{base}.{a.name}'
                out.append((node.lineno, sub if (package_dir.parent / Path(*sub.split('.'))).with_suffix('.py').exists()
                            or (package_dir.parent / Path(*sub.split('.')) / '__init__.py').exists() else base))
    return [(n, m) for n, m in out if m == 'blindsr' or m.startswith('blindsr.')]


def violations(package_dir: Path, plan: dict) -> list:
    "Lines 'file:line: A imports B, which its row does not allow (allowed: ...)' for every import against the plan."
    package_dir, bad = Path(package_dir), []
    for path in sorted(package_dir.rglob('*.py')):
        name = module_name(path, package_dir)
        if name in ('blindsr', 'blindsr._modidx'): continue   # the package root imports core only; nbdev's index none
        row = unit(name, plan)
        if row is None: bad.append(f"{path}: module {name} is not in the plan"); continue
        allowed = plan[row]
        for line, target in imports(path, package_dir):
            target_row = unit(target, plan)
            if target_row == row and (OWN in allowed or target == name): continue
            if target_row not in allowed:
                bad.append(f"{path}:{line}: {name} imports {target}, which the plan does not allow "
                           f"(its row allows {', '.join(sorted(a for a in allowed if a != OWN)) or 'nothing of blindsr'})")
    return bad
