# zkcoord %post: create the state directory; on first install apply the system's preset policy
# (what %systemd_post does: `systemctl preset`, so a distribution or image that disables new
# services keeps them disabled). The daemon is never started here: /etc/zkcoord.toml must be
# edited first. Upgrades restart a running daemon in %postun, as %systemd_postun_with_restart does.
mkdir -p /var/lib/zkcoord
chmod 0750 /var/lib/zkcoord
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset zkcoordd.service >/dev/null 2>&1 || :
    echo "zkcoord: edit /etc/zkcoord.toml, check it with 'zkcoordd --check-config', then 'systemctl enable --now zkcoordd'"
fi
