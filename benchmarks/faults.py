"""Every fault case of tests/faultcases.py on the real Dreamer train.py, printed as a table.

    python benchmarks/faults.py                 # all cases, about a minute or two each
    python benchmarks/faults.py --only SIGTERM  # the cases whose name contains SIGTERM

Each case runs the tiny command once with the fault (a full disk at one kind of write, or a
signal at one phase), records what the user saw and what was left on disk, then runs the same
command again and records whether it resumed and finished. The README's reliability table
summarises this output.
"""

import argparse
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests import faultcases  # noqa: E402


def seen(result):
    """What the user saw: the exit code and the last line of stderr (or of stdout)."""
    line = faultcases.last_line(result.stderr) if result.returncode else ''
    if not line.startswith('error:'):
        line = next(
            (x for x in result.stdout.splitlines() if x.startswith(faultcases.STOPPED)),
            faultcases.last_line(result.stdout),
        )
    return f'exit {result.returncode}: {line[:90]}'


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', default='', help='run the cases whose name contains this')
    args = parser.parse_args()
    cases = [case for case in faultcases.CASES if args.only in case.name]
    rows = []
    with tempfile.TemporaryDirectory() as root:
        for i, case in enumerate(cases):
            start = time.monotonic()
            outcome = faultcases.run_case(case, pathlib.Path(root) / f'case{i}')
            problems = outcome.problems()
            rows.append(
                (
                    case.name,
                    seen(outcome.first),
                    'ok' if all(outcome.after_fault.values()) else 'BAD',
                    f'exit {outcome.resumed.returncode}',
                    'ok' if not problems else 'FAIL: ' + '; '.join(problems),
                    f'{time.monotonic() - start:.0f}',
                )
            )
            print(' | '.join(rows[-1]), flush=True)
    header = ('case', 'the user sees', 'disk after', 'resume', 'verdict', 's')
    print()
    print('| ' + ' | '.join(header) + ' |')
    print('|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(row) + ' |')
    return 1 if any(row[4] != 'ok' for row in rows) else 0


if __name__ == '__main__':
    sys.exit(main())
