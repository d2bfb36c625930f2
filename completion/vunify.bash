# bash completion for vunify                                     -*- shell-script -*-
#
# Install: copy to /usr/share/bash-completion/completions/vunify (loaded on demand by
# bash-completion), or `source` it from ~/.bashrc. Self-contained: needs bash 4, not the
# bash-completion package.
#
# Completes the commands, each command's options, the values of --package-manager, the
# paths after --db, --vservers-dir, --exclude-from and --rpm, and server names: the
# folders in --vservers-dir (as typed on the line), else $VUNIFY_VSERVERS_DIR, else
# /vservers. A word with a slash completes as a path. Package names after `--` are left
# to the default completion.

_vunify_servers() {
    local dir=$1 cur=$2 used=$3 d
    [[ $dir == "~/"* ]] && dir=$HOME/${dir#"~/"}
    [[ -d $dir ]] || return 0
    for d in "$dir"/"$cur"*/; do
        [[ -d $d ]] || continue
        d=${d%/}
        d=${d##*/}
        [[ $d == lost+found || $used == *" $d "* ]] && continue   # one server once
        COMPREPLY+=("$d")
    done
}

_vunify() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=''
    (( COMP_CWORD > 0 )) && prev=${COMP_WORDS[COMP_CWORD-1]}
    COMPREPLY=()

    # `--db=PATH`: bash splits at '=' (COMP_WORDBREAKS); take the option before it.
    if [[ $cur == '=' ]]; then
        cur=''
    elif [[ $prev == '=' ]] && (( COMP_CWORD > 1 )); then
        prev=${COMP_WORDS[COMP_CWORD-2]}
    fi

    local commands='unify plan apply undo scan report gc recover verify status help'
    # Every command takes these (the index-only ones ignore what they do not use).
    local shared_opts='--vservers-dir --db --json -q --quiet -v --verbose -h --help'
    local run_opts="$shared_opts --rebuild-index --rpm --all-packages --package-manager
        --all-files --exclude --exclude-from --no-default-excludes --progress --csv --pool --pool-dir"
    local unify_opts='-n --dry-run --no-immutable --undo --full --method'
    local takes_value=' --method --db --vservers-dir --rpm --exclude --exclude-from --package-manager --top --sample '

    takes_value+='--metrics --save --pool-dir '

    # Find the command, the positional words before the cursor, `--`, and --vservers-dir.
    local cmd='' seed='' dashdash='' vdir=${VUNIFY_VSERVERS_DIR:-/vservers}
    local i w npos=0 used=' '
    for (( i = 1; i < COMP_CWORD; i++ )); do
        w=${COMP_WORDS[i]}
        if [[ $w == -- ]]; then
            dashdash=1
            break
        fi
        if [[ $w == --vservers-dir ]]; then
            if [[ ${COMP_WORDS[i+1]} == '=' ]]; then
                (( i + 2 < COMP_CWORD )) && vdir=${COMP_WORDS[i+2]}
                (( i += 2 ))
            else
                (( i + 1 < COMP_CWORD )) && vdir=${COMP_WORDS[i+1]}
                (( i += 1 ))
            fi
            continue
        fi
        if [[ $w == -* ]]; then
            if [[ $takes_value == *" $w "* ]]; then
                (( i++ ))
                [[ ${COMP_WORDS[i]} == '=' ]] && (( i++ ))
            fi
            continue
        fi
        [[ $w == '=' ]] && continue
        if [[ -z $cmd && -z $seed && " $commands " == *" $w "* ]]; then
            cmd=$w
        else
            [[ -z $cmd ]] && seed=1   # `vunify REF SERVER... -- PKG...`: the unify command
            (( npos++ ))
            used+="$w "
        fi
    done

    if [[ -n $dashdash ]]; then
        # package names: the default completion
        compopt -o default 2>/dev/null
        return 0
    fi

    # The value of an option.
    case $prev in
        --db|--exclude-from|--metrics|--save)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return 0 ;;
        --vservers-dir)
            compopt -o filenames 2>/dev/null
            mapfile -t COMPREPLY < <(compgen -d -- "$cur")
            return 0 ;;
        --rpm)
            compopt -o filenames 2>/dev/null
            if [[ $cur == */* ]]; then
                mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            else
                mapfile -t COMPREPLY < <(compgen -c -- "$cur")
            fi
            return 0 ;;
        --package-manager)
            mapfile -t COMPREPLY < <(compgen -W 'auto rpm dpkg none' -- "$cur")
            return 0 ;;
        --method)
            mapfile -t COMPREPLY < <(compgen -W 'link reflink' -- "$cur")
            return 0 ;;
        --exclude|--top|--sample)
            return 0 ;;
    esac

    local opts
    case ${cmd:-${seed:+unify}} in
        unify) opts="$run_opts $unify_opts" ;;
        plan) opts="$run_opts --full --method" ;;
        scan) opts="$run_opts --method" ;;
        undo) opts=$run_opts ;;
        apply) opts="$shared_opts -n --dry-run --progress --csv" ;;
        report) opts="$shared_opts --top --csv" ;;
        gc) opts="$shared_opts --rebuild-index" ;;
        verify) opts="$shared_opts --sample" ;;
        status|recover) opts=$shared_opts ;;
        help) opts='' ;;
        *) opts="$run_opts $unify_opts -V --version" ;;  # nothing yet: the seed syntax's options
    esac

    case ${cmd:-${seed:+unify}} in
        unify|plan|scan|apply|verify|report|'') opts+=' --metrics' ;;
    esac
    [[ $cmd == plan ]] && opts+=' --save'

    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$opts" -- "$cur")
        return 0
    fi

    case ${cmd:-${seed:+unify}} in
        help)
            (( npos == 0 )) && mapfile -t COMPREPLY < <(compgen -W "${commands% help}" -- "$cur")
            return 0 ;;
        report|gc|recover|verify|status)
            return 0 ;;
        apply) # the plan file
            compopt -o filenames 2>/dev/null
            (( npos == 0 )) && mapfile -t COMPREPLY < <(compgen -f -- "$cur")
            return 0 ;;
    esac

    # The reference and the servers: names in the vservers folder, or paths.
    if [[ $cur == */* || $cur == .* || $cur == '~'* ]]; then
        compopt -o filenames 2>/dev/null
        mapfile -t COMPREPLY < <(compgen -d -- "$cur")
        return 0
    fi
    [[ -z $cmd && -z $seed ]] && mapfile -t COMPREPLY < <(compgen -W "$commands" -- "$cur")
    _vunify_servers "$vdir" "$cur" "$used"
    return 0
}

complete -F _vunify vunify
