{
  "format": "edgecap-signature/1",
  "algorithm": "ed25519",
  "key_id": "9c1741f3ebe99e31affcaae7b6658fd0a13480cdaabdf514e34f6ddcf0e0b763",
  "signer": "edgecap maintainers",
  "created": "2026-12-03T12:50:02Z",
  "signature": "ND6qt/dqmtGML44B71RGOiAvk3pl8MxqcI7EyJyQl//JF/dqVVGElDC5YwFqd+6QinvWPxdy+6JcT9y1lCABBQ=="
}
