{
  "format": "edgecap-signature/1",
  "algorithm": "ed25519",
  "key_id": "9c1741f3ebe99e31affcaae7b6658fd0a13480cdaabdf514e34f6ddcf0e0b763",
  "signer": "edgecap maintainers",
  "created": "2026-12-03T07:17:43Z",
  "signature": "APFXA4UFyDho6iz+P0hdnpKk9ilXdh5u8qeK3NnvluLL6vJ1Gp4Ba0triaz5LoH3uy+ZJPB+EP7VtBp71miCDQ=="
}
