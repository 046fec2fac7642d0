# zkcoord %postun: forget the removed unit.
systemctl daemon-reload >/dev/null 2>&1 || :
