"""Scale-out: running the queue's jobs on several engine workers (Ray actors), chosen by what each one holds."""
