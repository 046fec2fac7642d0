# zkcoord %postun: forget the removed unit; on upgrade restart a running daemon on the new
# binary (%systemd_postun_with_restart: try-restart leaves a stopped daemon stopped).
systemctl daemon-reload >/dev/null 2>&1 || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart zkcoordd.service >/dev/null 2>&1 || :
fi
