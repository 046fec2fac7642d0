# zkcoord %preun: on final removal (not upgrade), stop and disable the daemon (%systemd_preun).
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now zkcoordd.service >/dev/null 2>&1 || :
fi
