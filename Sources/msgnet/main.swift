print("msgnet")
