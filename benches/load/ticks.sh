# Sourced by the load scripts: CPU clock ticks of a process's threads, from /proc.
# ticks PID [EXCLUDE_REGEX] -> "user system" ticks of PID's threads whose name does not match.
ticks() {
  local u=0 s=0 f comm fields
  for f in /proc/"$1"/task/*/stat; do
    comm=$(cut -d'(' -f2 "$f" | cut -d')' -f1)
    if [ -n "${2:-}" ] && [[ $comm =~ $2 ]]; then continue; fi
    read -r -a fields <<<"$(cut -d')' -f2 "$f")"
    u=$((u + fields[11])); s=$((s + fields[12]))
  done
  echo "$u $s"
}
# children_ticks PID -> the same, summed over PID's child processes (nginx's workers).
children_ticks() {
  local u=0 s=0 p a b
  for p in $(pgrep -P "$1"); do read -r a b <<<"$(ticks "$p")"; u=$((u + a)); s=$((s + b)); done
  echo "$u $s"
}
