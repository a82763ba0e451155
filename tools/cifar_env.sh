# Sourced by the CIFAR-10 benchmark scripts (default_bundle.sh, alternative_default.sh, data_scale.sh):
# where the data packs and the tools are, the 50,000 training images as dlsr-train --data arguments,
# the two shared OOD sets as --ood arguments, and the STEP filter (want STEPNAME).
DATA=${DATA:-../shared/data}
BIN=${BIN:-.venv/bin}
TRAIN=(--data "$DATA/cifar10_train.npz")
for i in 1 2 3 4; do TRAIN+=(--data "$DATA/cifar10_train_extra$i.npz"); done
OOD=(--ood tinyimagenet="$DATA/tinyimagenet_val_32.npz" --ood dtd="$DATA/dtd_subset10.npz")
STEP=${STEP:-all}
want() { [ "$STEP" = all ] || [ "$STEP" = "$1" ]; }
