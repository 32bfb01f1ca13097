# Minimal "--name value" option parser (the role of Kaldi's utils/parse_options.sh): sets existing
# shell variables; an unknown option is an error. Source it after the defaults: . local/parse_options.sh "$@"
while [ $# -gt 0 ]; do
    case "$1" in
        --*) name="${1#--}"; name="${name//-/_}"
             if ! declare -p "$name" >/dev/null 2>&1; then echo "$0: unknown option --${1#--}" >&2; exit 1; fi
             [ $# -ge 2 ] || { echo "$0: option $1 needs a value" >&2; exit 1; }
             printf -v "$name" '%s' "$2"; shift 2 ;;
        *) echo "$0: unexpected argument '$1' (options are --name value)" >&2; exit 1 ;;
    esac
done
