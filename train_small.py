"""The paper's seven-dataset evaluation (Table 2): train a grid of datasets × models × losses
× runs and print the table. The same as the console command `ngl-train-small`
(ngl_keras/cli/train_small.py); `python train_small.py --help` lists the options.

    python train_small.py                                   # configs/quick.yaml -> runs/quick
    python train_small.py --config configs/paper_scratch.yaml --out runs/scratch
    python train_small.py --losses ce ngl "ngl(alpha=3.0)" "exp(p) - y*p" --epochs 1 --limit-train 2048
    python train_small.py report runs/quick --compare-paper
    python train_small.py --config configs/voc_unet.yaml --data-dir /data/VOCdevkit   # Table 4 (task: segmentation)
"""

from ngl_keras.cli.train_small import main, parse_args, run  # noqa: F401  (main, parse_args: for tests)

if __name__ == "__main__":
    run()
