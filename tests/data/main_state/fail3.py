import sys

sys.exit(1 if int(sys.argv[1]) % 4 == 3 else 0)
