#!/usr/bin/env bash
# Stop the single-node SLURM cluster started by scripts/start_slurm.sh
# (slurmd, slurmctld, slurmdbd and MariaDB of the accounting mode, munged). Configuration, keys and state are kept, so
# scripts/start_slurm.sh can bring the cluster back up.
set -uo pipefail

if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        exec sudo -E bash "$0" "$@"
    fi
    echo "stop_slurm.sh: must be run as root" >&2
    exit 1
fi

alive() { # pid name -- process exists, has exactly this name and is not a zombie
    local st comm
    comm=$(cat "/proc/$1/comm" 2>/dev/null || true)
    [ "$comm" = "$2" ] || return 1
    st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null || true)
    [ -n "$st" ] && [ "$st" != Z ]
}

stop() { # name pidfile
    local name=$1 pidfile=$2 pids=""
    if [ -f "$pidfile" ]; then
        pids=$(cat "$pidfile" 2>/dev/null || true)
    fi
    # fall back to the exact daemon name (pidfile missing or stale)
    pids="$pids $(pgrep -x "$name" 2>/dev/null | tr '\n' ' ')"
    pids=$(echo $pids | tr ' ' '\n' | sort -u | tr '\n' ' ')
    local live=""
    for p in $pids; do
        alive "$p" "$name" && live="$live $p"
    done
    if [ -z "$live" ]; then
        echo "[stop_slurm] $name not running"
        rm -f "$pidfile"
        return 0
    fi
    echo "[stop_slurm] stopping $name (pid$live)"
    kill -TERM $live 2>/dev/null || true
    for _ in $(seq 1 20); do
        local still=""
        for p in $live; do alive "$p" "$name" && still="$still $p"; done
        [ -z "$still" ] && break
        sleep 0.5
    done
    for p in $live; do
        if alive "$p" "$name"; then
            echo "[stop_slurm] $name (pid $p) did not stop, sending SIGKILL"
            kill -KILL "$p" 2>/dev/null || true
        fi
    done
    rm -f "$pidfile"
}

stop slurmd /run/slurmd.pid
stop slurmctld /run/slurmctld.pid
# the accounting mode (start_slurm.sh --accounting): slurmdbd, then its MariaDB
stop slurmdbd /run/slurmdbd.pid
stop mariadbd /run/mysqld/mysqld.pid
stop munged /run/munge/munged.pid
