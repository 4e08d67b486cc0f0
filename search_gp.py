"""The genetic-programming loss search of the paper (five fitness experiments), resumable and
spread over workers with keras-tuner's chief/worker mode. The same as the console command
`ngl-search-gp` (ngl_keras/cli/search_gp.py); `python search_gp.py --help` lists the options.

    python search_gp.py --config configs/search/exp2_proxy.yaml --out search/exp2
    python search_gp.py --config configs/search/exp2_proxy.yaml --out search/exp2 --population 8 --generations 3
    python search_gp.py report search/exp2
"""

from ngl_keras.cli.search_gp import main, parse_args, run  # noqa: F401  (main, parse_args: for tests)

if __name__ == "__main__":
    run()
