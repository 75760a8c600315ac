"""(being written)"""
NODES = []
