{
  "format": "edgecap-signature/1",
  "algorithm": "ed25519",
  "key_id": "9c1741f3ebe99e31affcaae7b6658fd0a13480cdaabdf514e34f6ddcf0e0b763",
  "signer": "edgecap maintainers",
  "created": "2026-12-03T16:54:47Z",
  "signature": "rOdCL/nCDWqWjX8xV+Z1VSsTtTvzFTZqBRQ/sambb+6qBV97zRivqVYChMYXUU0+Q7IdSUeuBqHoy5rlr8a4Cw=="
}
