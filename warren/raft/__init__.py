"""warren.raft"""
