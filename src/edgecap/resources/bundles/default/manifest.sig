{
  "format": "edgecap-signature/1",
  "algorithm": "ed25519",
  "key_id": "9c1741f3ebe99e31affcaae7b6658fd0a13480cdaabdf514e34f6ddcf0e0b763",
  "signer": "edgecap maintainers",
  "created": "2026-12-03T10:11:15Z",
  "signature": "Qjyt9zXeGSx7ZCdWnZ2IEFSmdzjpzUaM5CtUIHdqOvHrm6Fwp+5oDsXNVbaYybrDheDmk63gwdhMs7lLrLGoBg=="
}
