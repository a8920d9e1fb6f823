"""Radio input: BLE adverts and Wi-Fi probe requests turned into anonymous presence (pure parts and adapters)."""
